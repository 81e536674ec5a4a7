"""Reading the published segmentation back: summaries, concentration, reports."""
