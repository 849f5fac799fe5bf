"""The IMAC dataset builder package."""
