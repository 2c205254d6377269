"""Layered neural atlases (NLA, Kasten et al. 2021), fitted by the pack itself: the atlas model, its losses,
optical flow, the fit, rendering frames and edits from the atlases, and atlas files (Text2LIVE section 3.2
edits videos through them)."""
