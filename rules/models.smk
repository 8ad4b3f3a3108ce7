# The train/test split (defined once), the model sample (a bounded, stratified sample of the
# cells with their split: every model reads it, not the whole cells table), seed 000's feature
# transform and models, seed 001's tuned forest, and the random-vs-grouped split comparison.


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
        # streamed: 17 bytes a cell held (+ one row group): 1,227 MB measured at 37.9M cells,
        # 741 MB of cells.parquet
        mem_mb=mem_mb(400, 2),
        runtime=10,
    params:
        by=config["split"]["by"],
        test_size=config["split"]["test_size"],
        seed=config["split"]["seed"],
    script:
        "../workflow/scripts/split.py"


rule model_sample:
    input:
        cells=rules.merge_cells.output.cells,
        split=rules.split.output[0],
    output:
        f"{R}/features/model_sample.parquet",
    log:
        f"{R}/logs/features/model_sample.log",
    benchmark:
        f"{R}/benchmarks/features/model_sample.tsv"
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    resources:
        # streamed: one row group and one batch of the cells plus the sample's positions: 853 MB
        # measured at 37.9M cells (400k sampled)
        mem_mb=mem_mb(1200),
        runtime=30,
    params:
        max_train_cells=config["models"]["max_train_cells"],
        max_test_cells=config["models"]["max_test_cells"],
        seed=config["models"]["seed"],
    script:
        "../workflow/scripts/model_sample.py"


rule model_sample_pcs:
    input:
        sample=rules.model_sample.output[0],
        embeddings=rules.embeddings.output.parquet,
    output:
        f"{R}/features/model_sample_pcs.parquet",
    log:
        f"{R}/logs/features/model_sample_pcs.log",
    benchmark:
        f"{R}/benchmarks/features/model_sample_pcs.tsv"
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    resources:
        # streamed: one row group of the embeddings plus the sample's ids: 1,094 MB measured at
        # 37.9M cells (400k sampled)
        mem_mb=mem_mb(1500),
        runtime=30,
    script:
        "../workflow/scripts/model_sample_pcs.py"


rule features:
    input:
        sample=rules.model_sample.output[0],
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
        # 1,025 MB measured on a 400k-cell sample (11.9 MB)
        mem_mb=mem_mb(800, 30),
        runtime=20,
    params:
        numeric=config["features"]["numeric"],
        categorical=config["features"]["categorical"],
        poly_degree=config["features"]["poly_degree"],
    script:
        "../workflow/scripts/features.py"


MODELS = config["models"]
# the model sample's PCs, only when the forests use them (models.rf.use_pcs)
SAMPLE_PCS = rules.model_sample_pcs.output if MODELS["rf"]["use_pcs"] else []


rule ridge:
    input:
        sample=rules.model_sample.output[0],
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
        # 718 MB measured on a 400k-cell sample (11.9 MB)
        mem_mb=mem_mb(600, 25),
        runtime=30,
    params:
        alpha=MODELS["ridge"]["alpha"],
        features=MODELS["ridge"]["features"],
        cv_folds=MODELS["cv_folds"],
        seed=MODELS["seed"],
    script:
        "../workflow/scripts/ridge.py"


rule rf_classifier:
    input:
        sample=rules.model_sample.output[0],
        embeddings=SAMPLE_PCS,
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
        mem_mb=mem_mb(300, 1, with_forest_mb(140)),
        runtime=60,
    params:
        n_estimators=MODELS["rf"]["n_estimators"],
        max_depth=MODELS["rf"]["max_depth"],
        max_samples=MODELS["rf"]["max_samples"],
        max_leaf_nodes=MODELS["rf"]["max_leaf_nodes"],
        n_pcs=MODELS["rf"]["n_pcs"] if MODELS["rf"]["use_pcs"] else None,
        cv_folds=MODELS["cv_folds"],
        seed=MODELS["seed"],
    script:
        "../workflow/scripts/rf_classifier.py"


rule baselines:
    input:
        sample=rules.model_sample.output[0],
        embeddings=SAMPLE_PCS,
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
        max_leaf_nodes=MODELS["rf"]["max_leaf_nodes"],
        n_pcs=MODELS["rf"]["n_pcs"] if MODELS["rf"]["use_pcs"] else None,
        cv_folds=MODELS["cv_folds"],
        seed=MODELS["seed"],
    script:
        "../workflow/scripts/baselines.py"


rule rf_regressor:
    input:
        sample=rules.model_sample.output[0],
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
    script:
        "../workflow/scripts/rf_regressor.py"


rule split_comparison:
    input:
        sample=rules.model_sample.output[0],
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
        mem_mb=mem_mb(300, 1, with_forest_mb(140)),
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
        max_leaf_nodes=MODELS["rf"]["max_leaf_nodes"],
    script:
        "../workflow/scripts/split_comparison.py"
