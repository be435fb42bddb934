"""The model pipeline: train → export → gate → register → promote, driven by environments/*.yaml."""
