"""One module per notebook: build and run an experiment from its parameters."""
