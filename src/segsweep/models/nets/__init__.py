"""Segmentation networks: each maps images [B,3,H,W] to logits [B,num_classes,H,W]."""
