"""What to run: a study's declaration (``Study``), its trials' specifications and identities, the compute profiles, and a study's cost before it starts. No Ray."""
