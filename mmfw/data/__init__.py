"""Datamodules (AV-digits, manifest), audio/image/text/tabular preprocessing, and the batch contract."""
