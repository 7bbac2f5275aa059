"""Operations: executor selection, instance configs, the CI round check."""
