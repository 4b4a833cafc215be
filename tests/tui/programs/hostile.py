"""A sandboxed program that tries to drive the user's terminal through its output."""

import sys

out = sys.stdout
out.write("normal line before\n")
out.write("\x1b[2J\x1b[H")                       # clear the screen, cursor home
out.write("\x1b[10;5Hcursor moved here\n")        # absolute cursor move
out.write("\x1b]0;PWNED TITLE\x07")                # OSC 0: window title
out.write("\x1b]52;c;ZWNobyBwd25lZA==\x07\n")       # OSC 52: write the clipboard
out.write("\x1b]8;;http://example.invalid\x1b\\link\x1b]8;;\x1b\\\n")  # OSC 8 hyperlink
out.write("\x1bP+q544e\x1b\\\n")                    # DCS: terminal capability query
out.write("\x1b[?1049l\x1b[?25h\n")                 # leave the alternate screen, show cursor
out.write("\x9b31m8-bit CSI\n")                     # C1 CSI as a character
out.write("bell\x07 backspace\x08\x08 evil\u202etxt.exe\n")
out.write("[red]not markup[/red] [bold]either[/]\n")
out.write("downloading 10%\rdownloading 100%\n")
out.write("\x1b[32muser@host\x1b[0m:~$ sudo rm -rf /")  # a fake prompt, no newline
out.flush()
sys.stderr.write("\x1b[31merror in red\x1b[0m\x1b[1A\x1b[K\n")
sys.stderr.flush()
