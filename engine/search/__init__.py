"""Image search: walk folders, embed images with CLIP/SigLIP, store them, and query the vectors."""
