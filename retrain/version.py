"""The version of retrain, in a module of its own so that any module can read it without
importing the package (whose __init__ imports api.py, which imports the pipeline)."""
__version__ = "0.1.0"
