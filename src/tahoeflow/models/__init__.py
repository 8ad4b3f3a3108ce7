"""The models on the per-cell table, trained on stratified samples.

- :mod:`.features`: train/test split and the leak-free feature transformer.
- :mod:`.split_file`: the same split streamed over a cells file (17 bytes a cell held).
- :mod:`.sample_file`: the models' stratified sample of train and test cells, streamed.
- :mod:`.design`, :mod:`.checks`, :mod:`.sampling`: design matrices, argument checks, samples.
- :mod:`.regression`: Ridge and the random-forest regressor on expression change.
- :mod:`.classification`, :mod:`.baselines`: the cell-line classifier and its baselines.
- :mod:`.ceiling`, :mod:`.evaluation`, :mod:`.compare`: ceilings, metrics, split comparison.
- :mod:`.persist`, :mod:`.figures`: saving models and their figures.
"""
