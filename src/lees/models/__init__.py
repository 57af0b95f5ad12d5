"""The frozen backbone and what it is called with: architectures, loading, one call convention for
every denoiser, latents, datasets, and the pipeline of the embedded DiT.
"""
