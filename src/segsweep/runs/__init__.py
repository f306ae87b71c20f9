"""What a run leaves behind and how it is written: the run record, checkpoints, manifest, callbacks, files, images, CLI errors."""
