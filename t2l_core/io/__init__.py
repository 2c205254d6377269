"""Files and inputs: images, videos and safetensors written atomically and read back with errors that name
the file, and checks that reject non-finite inputs with a message naming them."""
