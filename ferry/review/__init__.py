"""What a reviewer sees: MLflow runs and their records, plots, the registry hand-over, the journal kept
while MLflow is unreachable, the summary table.

Never imports TensorFlow: these modules run in the flow process.
"""
