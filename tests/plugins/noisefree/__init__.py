"""A test-only method added as files alone: the model (``model.py``) and its setup
(``setup.py``); a config names it by module path (``model.method: noisefree.setup``)."""
