"""How a training step is computed, never what: the fast path (fused CLIP kernels, staged backward,
precision, CPU heap handling). The method packages never import it.
"""
