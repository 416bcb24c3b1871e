//! A stand-in for the Hugging Face hub on a loopback port: the two endpoints `hf-hub` calls
//! (a revision's file list, and a file by `resolve/`, with the headers it reads).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub struct MockHub {
    pub endpoint: String,
    /// Full downloads served (not counting the one-byte probes for metadata).
    pub downloads: Arc<AtomicUsize>,
    pub requests: Arc<Mutex<Vec<String>>>,
}

impl MockHub {
    /// Serves repository `repo` at commit `commit` with `files` (name, content) until the test
    /// process ends.
    pub fn start(repo: &str, commit: &str, files: Vec<(String, Vec<u8>)>) -> MockHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let downloads = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(Hub {
            repo: repo.to_string(),
            commit: commit.to_string(),
            files: files.into_iter().collect(),
            downloads: downloads.clone(),
            requests: requests.clone(),
        });
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = state.clone();
                std::thread::spawn(move || state.serve(stream));
            }
        });
        MockHub {
            endpoint,
            downloads,
            requests,
        }
    }
}

struct Hub {
    repo: String,
    commit: String,
    files: HashMap<String, Vec<u8>>,
    downloads: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Hub {
    fn serve(&self, mut stream: TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request = String::new();
        if reader.read_line(&mut request).is_err() {
            return;
        }
        let mut range = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                range = Some(v.trim().to_string());
            }
        }
        let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
        self.requests.lock().unwrap().push(path.clone());
        let info = format!("/api/models/{}/revision/main", self.repo);
        let resolve = format!("/{}/resolve/main/", self.repo);
        if path == info {
            let siblings: Vec<String> = self
                .files
                .keys()
                .map(|f| format!("{{\"rfilename\":\"{f}\"}}"))
                .collect();
            let body = format!(
                "{{\"sha\":\"{}\",\"siblings\":[{}]}}",
                self.commit,
                siblings.join(",")
            );
            respond(&mut stream, "200 OK", &[], body.as_bytes());
        } else if let Some(data) = path.strip_prefix(&resolve).and_then(|f| self.files.get(f)) {
            let start: usize = range
                .as_deref()
                .and_then(|r| r.split('-').next())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let end = if range.as_deref() == Some("0-0") {
                1.min(data.len())
            } else {
                self.downloads.fetch_add(1, Ordering::SeqCst);
                data.len()
            };
            let etag = format!("\"etag-{}-{}\"", path.len(), data.len());
            let content_range = format!("bytes {start}-{}/{}", end.max(1) - 1, data.len());
            let headers = [
                ("x-repo-commit", self.commit.as_str()),
                ("etag", etag.as_str()),
                ("content-range", content_range.as_str()),
            ];
            respond(
                &mut stream,
                "206 Partial Content",
                &headers,
                &data[start..end],
            );
        } else {
            respond(&mut stream, "404 Not Found", &[], b"not found");
        }
    }
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, &str)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body));
}
