"""What is trained: the LightningModule, networks, losses, metrics and class weights."""
