"""kvlab.report"""
