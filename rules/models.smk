# The train/test split (defined once), seed 000's feature transform and models, seed 001's
# tuned forest, and the random-vs-grouped split comparison.


rule split:
    input:
        cells=rules.merge_cells.output.cells,
    output:
        f"{R}/features/split.parquet",
    log:
        f"{R}/logs/features/split.log",
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    resources:
        # streamed: 17 bytes a cell held (+ pools): 1,318 MB measured at 37.9M cells, 741 MB
        # of cells.parquet
        mem_mb=mem_mb(400, 2),
        runtime=10,
    params:
        by=config["split"]["by"],
        test_size=config["split"]["test_size"],
        seed=config["split"]["seed"],
    script:
        "../workflow/scripts/split.py"


rule features:
    input:
        cells=rules.merge_cells.output.cells,
        split=rules.split.output[0],
    output:
        transformer=f"{R}/features/transformer.joblib",
        train=f"{R}/features/X_train.npz",
        train_names=f"{R}/features/X_train.names.json",
        test=f"{R}/features/X_test.npz",
        test_names=f"{R}/features/X_test.names.json",
    log:
        f"{R}/logs/features/features.log",
    benchmark:
        f"{R}/benchmarks/features/features.tsv"
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(500, 10),
        runtime=20,
    params:
        numeric=config["features"]["numeric"],
        categorical=config["features"]["categorical"],
        poly_degree=config["features"]["poly_degree"],
    script:
        "../workflow/scripts/features.py"


MODELS = config["models"]


rule ridge:
    input:
        cells=rules.merge_cells.output.cells,
        split=rules.split.output[0],
    output:
        model=f"{R}/models/ridge/model.joblib",
        predictions=f"{R}/models/ridge/predictions.parquet",
        metrics=f"{R}/models/ridge/metrics.json",
    log:
        f"{R}/logs/models/ridge.log",
    benchmark:
        f"{R}/benchmarks/models/ridge.tsv"
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(250, 21),
        runtime=30,
    params:
        alpha=MODELS["ridge"]["alpha"],
        features=MODELS["ridge"]["features"],
        cv_folds=MODELS["cv_folds"],
        seed=MODELS["seed"],
        max_train_cells=MODELS["max_train_cells"],
    script:
        "../workflow/scripts/ridge.py"


rule rf_classifier:
    input:
        cells=rules.merge_cells.output.cells,
        split=rules.split.output[0],
        embeddings=rf_embeddings,
    output:
        model=f"{R}/models/rf/model.joblib",
        metrics=f"{R}/models/rf/metrics.json",
        report=f"{R}/models/rf/classification_report.csv",
        confusion=f"{R}/models/rf/confusion.csv",
        importances=f"{R}/models/rf/importances.csv",
        predictions=f"{R}/models/rf/predictions.parquet",
    log:
        f"{R}/logs/models/rf_classifier.log",
    benchmark:
        f"{R}/benchmarks/models/rf_classifier.tsv"
    conda:
        "../envs/tahoeflow.yaml"
    threads: 2
    resources:
        mem_mb=mem_mb(300, 140),
        runtime=60,
    params:
        n_estimators=MODELS["rf"]["n_estimators"],
        max_depth=MODELS["rf"]["max_depth"],
        max_samples=MODELS["rf"]["max_samples"],
        n_pcs=MODELS["rf"]["n_pcs"] if MODELS["rf"]["use_pcs"] else None,
        cv_folds=MODELS["cv_folds"],
        seed=MODELS["seed"],
        max_train_cells=MODELS["max_train_cells"],
    script:
        "../workflow/scripts/rf_classifier.py"


rule baselines:
    input:
        cells=rules.merge_cells.output.cells,
        split=rules.split.output[0],
        embeddings=rf_embeddings,
        rf_metrics=rules.rf_classifier.output.metrics,
    output:
        report(
            f"{R}/models/baselines.csv",
            caption="../workflow/report/table.rst",
            category="Models",
        ),
    log:
        f"{R}/logs/models/baselines.log",
    benchmark:
        f"{R}/benchmarks/models/baselines.tsv"
    conda:
        "../envs/tahoeflow.yaml"
    threads: 2
    resources:
        mem_mb=mem_mb(300, 25),
        runtime=60,
    params:
        n_estimators=MODELS["rf"]["n_estimators"],
        max_depth=MODELS["rf"]["max_depth"],
        max_samples=MODELS["rf"]["max_samples"],
        n_pcs=MODELS["rf"]["n_pcs"] if MODELS["rf"]["use_pcs"] else None,
        cv_folds=MODELS["cv_folds"],
        seed=MODELS["seed"],
        max_train_cells=MODELS["max_train_cells"],
    script:
        "../workflow/scripts/baselines.py"


rule rf_regressor:
    input:
        cells=rules.merge_cells.output.cells,
        split=rules.split.output[0],
    output:
        metrics=f"{R}/models/rf_regressor/metrics.json",
        cv_results=f"{R}/models/rf_regressor/cv_results.csv",
    log:
        f"{R}/logs/models/rf_regressor.log",
    benchmark:
        f"{R}/benchmarks/models/rf_regressor.tsv"
    conda:
        "../envs/tahoeflow.yaml"
    threads: 2
    resources:
        mem_mb=mem_mb(750, 45),
        runtime=120,
    params:
        features=MODELS["rf_regressor"]["features"],
        grid=MODELS["rf_regressor"]["grid"],
        cv_folds=MODELS["rf_regressor"]["cv_folds"],
        seed=MODELS["seed"],
        max_train_cells=MODELS["max_train_cells"],
    script:
        "../workflow/scripts/rf_regressor.py"


rule split_comparison:
    input:
        cells=rules.merge_cells.output.cells,
        split=rules.split.output[0],
    output:
        report(
            f"{R}/models/split_comparison.csv",
            caption="../workflow/report/table.rst",
            category="Models",
        ),
    log:
        f"{R}/logs/models/split_comparison.log",
    conda:
        "../envs/tahoeflow.yaml"
    threads: 2
    resources:
        mem_mb=mem_mb(300, 140),
        runtime=60,
    params:
        group_by=MODELS["grouped_split_by"],
        test_size=config["split"]["test_size"],
        seed=config["split"]["seed"],
        ridge_features=MODELS["ridge"]["features"],
        alpha=MODELS["ridge"]["alpha"],
        n_estimators=MODELS["rf"]["n_estimators"],
        max_depth=MODELS["rf"]["max_depth"],
        max_samples=MODELS["rf"]["max_samples"],
        max_train_cells=MODELS["max_train_cells"],
    script:
        "../workflow/scripts/split_comparison.py"
