"""DOTA data: annotation I/O, image splitting and merging, transforms, datasets and ToyDOTA."""
