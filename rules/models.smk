# The train/test split (defined once), seed 000's feature transform and models, seed 001's
# tuned forest, and the random-vs-grouped split comparison.


rule split:
    input:
        cells=rules.merge_cells.output.cells,
    output:
        f"{R}/features/split.parquet",
    params:
        by=config["split"]["by"],
        test_size=config["split"]["test_size"],
        seed=config["split"]["seed"],
    log:
        f"{R}/logs/features/split.log",
    threads: 1
    resources:
        mem_mb=lambda wc, input, attempt: int((500 + 4 * input.size_mb) * attempt),
        runtime=10,
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
    params:
        numeric=config["features"]["numeric"],
        categorical=config["features"]["categorical"],
        poly_degree=config["features"]["poly_degree"],
    log:
        f"{R}/logs/features/features.log",
    benchmark:
        f"{R}/benchmarks/features/features.tsv"
    threads: 1
    resources:
        mem_mb=lambda wc, input, attempt: int((800 + 10 * input.size_mb) * attempt),
        runtime=20,
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
    params:
        alpha=MODELS["ridge"]["alpha"],
        features=MODELS["ridge"]["features"],
        cv_folds=MODELS["cv_folds"],
        seed=MODELS["seed"],
    log:
        f"{R}/logs/models/ridge.log",
    benchmark:
        f"{R}/benchmarks/models/ridge.tsv"
    threads: 1
    resources:
        mem_mb=lambda wc, input, attempt: int((800 + 10 * input.size_mb) * attempt),
        runtime=30,
    script:
        "../workflow/scripts/ridge.py"


def rf_embeddings(wildcards):
    return [rules.embeddings.output.parquet] if MODELS["rf"]["use_pcs"] else []


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
    params:
        n_estimators=MODELS["rf"]["n_estimators"],
        max_depth=MODELS["rf"]["max_depth"],
        max_samples=MODELS["rf"]["max_samples"],
        n_pcs=MODELS["rf"]["n_pcs"] if MODELS["rf"]["use_pcs"] else None,
        cv_folds=MODELS["cv_folds"],
        seed=MODELS["seed"],
    log:
        f"{R}/logs/models/rf_classifier.log",
    benchmark:
        f"{R}/benchmarks/models/rf_classifier.tsv"
    threads: 2
    resources:
        mem_mb=lambda wc, input, attempt: int((1000 + 20 * input.size_mb) * attempt),
        runtime=60,
    script:
        "../workflow/scripts/rf_classifier.py"


rule baselines:
    input:
        cells=rules.merge_cells.output.cells,
        split=rules.split.output[0],
        embeddings=rf_embeddings,
    output:
        f"{R}/models/baselines.csv",
    params:
        n_estimators=MODELS["rf"]["n_estimators"],
        max_depth=MODELS["rf"]["max_depth"],
        max_samples=MODELS["rf"]["max_samples"],
        n_pcs=MODELS["rf"]["n_pcs"] if MODELS["rf"]["use_pcs"] else None,
        cv_folds=MODELS["cv_folds"],
        seed=MODELS["seed"],
    log:
        f"{R}/logs/models/baselines.log",
    benchmark:
        f"{R}/benchmarks/models/baselines.tsv"
    threads: 2
    resources:
        mem_mb=lambda wc, input, attempt: int((1000 + 20 * input.size_mb) * attempt),
        runtime=60,
    script:
        "../workflow/scripts/baselines.py"


rule rf_regressor:
    input:
        cells=rules.merge_cells.output.cells,
        split=rules.split.output[0],
    output:
        metrics=f"{R}/models/rf_regressor/metrics.json",
        cv_results=f"{R}/models/rf_regressor/cv_results.csv",
    params:
        features=MODELS["rf_regressor"]["features"],
        grid=MODELS["rf_regressor"]["grid"],
        cv_folds=MODELS["rf_regressor"]["cv_folds"],
        seed=MODELS["seed"],
    log:
        f"{R}/logs/models/rf_regressor.log",
    benchmark:
        f"{R}/benchmarks/models/rf_regressor.tsv"
    threads: 2
    resources:
        mem_mb=lambda wc, input, attempt: int((1000 + 20 * input.size_mb) * attempt),
        runtime=120,
    script:
        "../workflow/scripts/rf_regressor.py"


rule split_comparison:
    input:
        cells=rules.merge_cells.output.cells,
        split=rules.split.output[0],
    output:
        f"{R}/models/split_comparison.csv",
    params:
        group_by=MODELS["grouped_split_by"],
        test_size=config["split"]["test_size"],
        seed=config["split"]["seed"],
        ridge_features=MODELS["ridge"]["features"],
        alpha=MODELS["ridge"]["alpha"],
        n_estimators=MODELS["rf"]["n_estimators"],
        max_depth=MODELS["rf"]["max_depth"],
        max_samples=MODELS["rf"]["max_samples"],
    log:
        f"{R}/logs/models/split_comparison.log",
    threads: 2
    resources:
        mem_mb=lambda wc, input, attempt: int((1000 + 20 * input.size_mb) * attempt),
        runtime=60,
    script:
        "../workflow/scripts/split_comparison.py"
