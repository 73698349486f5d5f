"""The gateway: the only HTTP surface facing YClients and the browser."""
