"""The edit layer of paper section 3.1: generator (appendix A.1), compositing (eq. 1), CLIP views, losses
(eqs. 3-8), the objective (eq. 2), the trained layer and the one training loop of image and video edits.
"""
