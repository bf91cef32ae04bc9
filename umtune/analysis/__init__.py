"""Translation-quality metrics, checkpoint evaluation, results tables and plotly reports."""
