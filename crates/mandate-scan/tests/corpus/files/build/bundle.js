var k="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";
