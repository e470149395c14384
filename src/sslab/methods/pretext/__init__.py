"""Pretext tasks: Exemplar-CNN, rotation, jigsaw, relative patch location, counting, colourisation, context encoder, denoising and split-brain autoencoders, and their multi-task combination."""
