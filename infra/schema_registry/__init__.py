"""The local Confluent-compatible schema registry (Apicurio Registry from Maven Central): see registry.py."""
