"""s2s-sweep: Self2Self+ denoising of whole datasets, and its hyperparameter search, on Ray."""
