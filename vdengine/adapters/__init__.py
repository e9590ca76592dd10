"""Adapters that put models from other libraries behind vdengine's Denoiser protocol.

``vdengine.adapters.diffusers``: diffusers' video UNets (ModelScope UNet3D, AnimateDiff, Stable
Video Diffusion) with fused temporal attention and group norms. Imported on demand: diffusers is
needed only by code that uses it.
"""
