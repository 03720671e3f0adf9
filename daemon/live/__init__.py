"""The live service: rolling windows, batched inference, forecast log, scoring, retraining."""
