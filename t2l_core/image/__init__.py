"""Image edits (paper section 3.1): the internal dataset (appendix A.2) and image training, the examples
an image gives the shared training loop.
"""
