"""The embedded local stack: a moto server driven by the same serverless.yml (not deployed)."""
