"""The results wing: the results store, metric names, a study's summary and findings, trial rows and host provenance. No Ray and no torch: the dashboard depends on this wing alone."""
