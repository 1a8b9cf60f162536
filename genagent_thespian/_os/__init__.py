"""The operating system: finding and ending processes, and closing the TCP transport."""
