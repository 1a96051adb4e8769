"""Accuracy metrics, release gates and labelled-scan readers, shared by tools, training and compression."""
