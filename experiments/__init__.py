"""The experiments behind the documents: reproduction protocols, the DCASE baseline, tools, benchmarks."""
