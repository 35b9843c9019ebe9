// GridTransport
