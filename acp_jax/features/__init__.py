"""Feature extractors that turn raw media into the vectors ACP-Net consumes."""
