"""Artwork variants and the personalised selector (a contextual bandit) with off-policy evaluation."""
