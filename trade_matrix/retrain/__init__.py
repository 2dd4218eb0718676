"""The weekly retrain pipeline, step by step, and the papermill runner of research/retrain.ipynb."""
