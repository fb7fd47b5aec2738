"""The learned models: LightGBM churn and next-purchase (hazard) models, compiled trees for batch
scoring, and the choice of the served score among learned and classical candidates."""
