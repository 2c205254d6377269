"""Text2LIVE core: text-driven layered image and video editing in plain PyTorch.

This package never imports ComfyUI. Everything the ComfyUI nodes do is available here and through the
command line (``python -m t2l_core``).
"""

__version__ = "0.1.0"
