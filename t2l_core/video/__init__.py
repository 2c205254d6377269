"""Video edits through a layered atlas (paper section 3.2, eqs. 9-12, appendix A.4): the atlas-crop dataset,
video training (the examples a video gives the shared training loop) and applying atlas edits to the video.
"""
