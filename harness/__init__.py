"""Experiment-decision harness: is fine-tuning justified for this task, or does a prompt or retrieval do?"""
