"""kvlab.bench"""
