"""Wire contracts of the NEXUS-X platform: models, the topic registry, generated JSON Schemas."""
