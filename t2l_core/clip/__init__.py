"""The frozen CLIP every loss is computed with: the model wrapper, loading weights from files and caches, a
tiny random CLIP for tests, text templates, and relevancy maps (Text2LIVE section 3.1, bootstrapping)."""
