// Go's side of the interop tests (tests/archive_go.rs): reads what ferry
// produces with the standard library Wings is built on.
//
//	read_tgz ARCHIVE DEST   extracts a tar.gz with compress/gzip
//	                        (multistream, every member's CRC and length
//	                        checked) under archive/tar; prints the entry
//	                        count.
//	read_tgz send URL AUTH DIR
//	                        sends DIR the way a Wings source does: a
//	                        chunked POST to URL with Authorization AUTH,
//	                        mime/multipart parts "archive" (archive/tar
//	                        under compress/gzip, streamed through a pipe)
//	                        and "checksum" (its SHA-256); prints the HTTP
//	                        status and body.
//	read_tgz serve DEST     receives one transfer the way Wings does: an
//	                        HTTP server on 127.0.0.1 (prints "port N"),
//	                        POST /api/transfers read with mime/multipart,
//	                        unknown parts skipped, the archive part hashed
//	                        with SHA-256 while it is extracted, compared
//	                        with the checksum part; answers 200 or 400 and
//	                        prints "received ENTRIES SHA256", then exits.
//
//	read_tgz pelican-send ... | pelican-serve ...
//	                        Pelican Wings' sender and receiver (pelican.go,
//	                        built with this file).
//
// Any error exits non-zero with the reason, including bytes after the tar
// end that do not decompress cleanly.
package main

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

type stamp struct {
	path  string
	mode  os.FileMode
	mtime time.Time
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "read_tgz: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	switch {
	case len(os.Args) >= 8 && os.Args[1] == "pelican-send":
		a := os.Args[2:]
		pelicanSend(a[0], a[1], a[2], a[3], a[4], a[5], a[6:])
	case len(os.Args) == 8 && os.Args[1] == "pelican-serve":
		a := os.Args[2:]
		pelicanServe(a[0], a[1], a[2], a[3], a[4], a[5])
	case len(os.Args) == 3 && os.Args[1] == "serve":
		serve(os.Args[2])
	case len(os.Args) == 5 && os.Args[1] == "send":
		send(os.Args[2], os.Args[3], os.Args[4])
	case len(os.Args) == 3:
		f, err := os.Open(os.Args[1])
		if err != nil {
			fail("%v", err)
		}
		defer f.Close()
		entries, err := extract(f, os.Args[2])
		if err != nil {
			fail("%v", err)
		}
		fmt.Println(entries)
	default:
		fail("usage: read_tgz ARCHIVE DEST | read_tgz serve DEST | read_tgz send URL AUTH DIR")
	}
}

// extract unpacks a tar.gz stream into dest and returns the entry count.
func extract(r io.Reader, dest string) (int, error) {
	return extractTar(r, dest, true)
}

// extractTar is extract; with drain false it stops at the tar end marker
// and reads no further (as mholt/archives, Pelican's extractor, does).
func extractTar(r io.Reader, dest string, drain bool) (int, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return 0, fmt.Errorf("gzip header: %w", err)
	}
	tr := tar.NewReader(gz)
	var stamps []stamp
	entries := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("tar: %w", err)
		}
		entries++
		name := filepath.Clean(h.Name)
		if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return 0, fmt.Errorf("unsafe name %q", h.Name)
		}
		p := filepath.Join(dest, name)
		mode := os.FileMode(h.Mode).Perm()
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return 0, err
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o700); err != nil {
				return 0, err
			}
			stamps = append(stamps, stamp{p, mode, h.ModTime})
		case tar.TypeReg:
			out, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return 0, err
			}
			n, err := io.Copy(out, tr)
			if err != nil {
				return 0, fmt.Errorf("%s: %w", h.Name, err)
			}
			if n != h.Size {
				return 0, fmt.Errorf("%s: %d bytes, header says %d", h.Name, n, h.Size)
			}
			if err := out.Close(); err != nil {
				return 0, err
			}
			stamps = append(stamps, stamp{p, mode, h.ModTime})
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, p); err != nil {
				return 0, err
			}
		case tar.TypeLink:
			// ferry writes a second link to a file as a hard-link entry
			// naming the first path, as GNU tar does.
			target := filepath.Clean(h.Linkname)
			if filepath.IsAbs(target) || target == ".." || strings.HasPrefix(target, "../") {
				return 0, fmt.Errorf("unsafe link %q", h.Linkname)
			}
			if err := os.Link(filepath.Join(dest, target), p); err != nil {
				return 0, err
			}
		default:
			return 0, fmt.Errorf("%s: unexpected entry type %q", h.Name, h.Typeflag)
		}
	}
	// Whatever follows the tar end marker must still be valid gzip: reading
	// to the end makes the reader check the last member's CRC and length.
	if drain {
		if _, err := io.Copy(io.Discard, gz); err != nil {
			return 0, fmt.Errorf("after the tar end: %w", err)
		}
	}
	if err := gz.Close(); err != nil {
		return 0, err
	}
	// Deepest first, so setting a parent's mtime comes after its children.
	sort.SliceStable(stamps, func(i, j int) bool {
		return strings.Count(stamps[i].path, "/") > strings.Count(stamps[j].path, "/")
	})
	for _, s := range stamps {
		if err := os.Chmod(s.path, s.mode); err != nil {
			return 0, err
		}
		if err := os.Chtimes(s.path, s.mtime, s.mtime); err != nil {
			return 0, err
		}
	}
	return entries, nil
}

// receive handles one incoming transfer body; returns the entry count and
// the archive's SHA-256, or why it was refused.
func receive(r *http.Request, dest string) (int, string, error) {
	mr, err := r.MultipartReader()
	if err != nil {
		return 0, "", fmt.Errorf("invalid content type: %w", err)
	}
	var digest, checksum string
	entries := 0
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, "", fmt.Errorf("multipart: %w", err)
		}
		switch part.FormName() {
		case "archive":
			h := sha256.New()
			entries, err = extract(io.TeeReader(part, h), dest)
			if err != nil {
				return 0, "", err
			}
			// Hash every byte of the part, as Wings does.
			if _, err := io.Copy(h, part); err != nil {
				return 0, "", err
			}
			digest = hex.EncodeToString(h.Sum(nil))
		case "checksum":
			if digest == "" {
				return 0, "", errors.New("archive must be sent before the checksum")
			}
			b, err := io.ReadAll(io.LimitReader(part, 1024))
			if err != nil {
				return 0, "", err
			}
			checksum = strings.TrimSpace(string(b))
		default:
			// Wings skips parts it does not know (ferry's configuration).
			if _, err := io.Copy(io.Discard, part); err != nil {
				return 0, "", err
			}
		}
	}
	if digest == "" || checksum == "" {
		return 0, "", errors.New("missing archive or checksum")
	}
	if digest != checksum {
		return 0, "", fmt.Errorf("checksums don't match: %s != %s", digest, checksum)
	}
	return entries, digest, nil
}

func serve(dest string) {
	ln := listenAndSay()
	var outcome outcomeBox
	mux := http.NewServeMux()
	mux.HandleFunc("/api/transfers", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		entries, digest, err := receive(r, dest)
		if err != nil {
			http.Error(w, fmt.Sprintf(`{"error":%q}`, err.Error()), http.StatusBadRequest)
			outcome.tell("refused " + err.Error())
			return
		}
		w.WriteHeader(http.StatusOK)
		outcome.tell(fmt.Sprintf("received %d %s", entries, digest))
	})
	serveUntilAnswered(ln, mux, &outcome)
}

// listenAndSay listens on a free loopback port and tells the test which.
func listenAndSay() net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail("%v", err)
	}
	fmt.Printf("port %d\n", ln.Addr().(*net.TCPAddr).Port)
	return ln
}

// outcomeBox holds the line a receiver prints once its answer is out.
type outcomeBox struct {
	mu   sync.Mutex
	line string
}

func (o *outcomeBox) tell(line string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.line = line
}

// serveUntilAnswered serves mux on ln and prints the outcome once the
// answer is wholly written and the connection idle or closed: exiting
// right after the handler could cut the answer off on a loaded machine.
func serveUntilAnswered(ln net.Listener, mux *http.ServeMux, o *outcomeBox) {
	done := make(chan string, 1)
	srv := &http.Server{
		Handler: mux,
		ConnState: func(_ net.Conn, state http.ConnState) {
			if state != http.StateIdle && state != http.StateClosed {
				return
			}
			o.mu.Lock()
			defer o.mu.Unlock()
			if o.line != "" {
				select {
				case done <- o.line:
				default:
				}
			}
		},
	}
	go func() {
		if err := srv.Serve(ln); err != nil {
			fail("%v", err)
		}
	}()
	select {
	case line := <-done:
		fmt.Println(line)
	case <-time.After(120 * time.Second):
		fail("no transfer within 120 s")
	}
}

// pack writes dir as a tar.gz the way Wings archives a server: paths
// relative to dir, symlinks as symlinks, headers from the file info.
func pack(dir string, w io.Writer) error {
	gz, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(gz)
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil || rel == "." {
			return err
		}
		info, err := os.Lstat(path)
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&os.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if info.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

func send(url, auth, dir string) {
	body, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		part, err := mw.CreateFormFile("archive", "archive.tar.gz")
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		h := sha256.New()
		if err := pack(dir, io.MultiWriter(part, h)); err != nil {
			pw.CloseWithError(err)
			return
		}
		if err := mw.WriteField("checksum", hex.EncodeToString(h.Sum(nil))); err != nil {
			pw.CloseWithError(err)
			return
		}
		pw.CloseWithError(mw.Close())
	}()
	req, err := http.NewRequest(http.MethodPost, url, body)
	if err != nil {
		fail("%v", err)
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fail("%v", err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 64*1024))
	fmt.Printf("%d %s\n", resp.StatusCode, strings.TrimSpace(string(answer)))
}
