"""Files a run leaves on disk: run directories, checkpoints, posterior samples and exported model files."""
