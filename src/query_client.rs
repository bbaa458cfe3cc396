//! `deltabook query`: subscribes to a live SQL query of a running service
//! (`POST /query` on its HTTP endpoint) and shows it: a table redrawn at
//! every progress mark on a terminal, the JSON lines as they come when
//! piped; with `--once`, the snapshot only.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// Longest header line or chunk-size line accepted from the server.
const MAX_LINE_BYTES: usize = 64 * 1024;

/// Subscribes to `sql` at `address` (`host:port`) and writes what arrives
/// to standard output until the server ends the stream (or, with `once`,
/// after the snapshot). An error line from the server fails the command.
pub fn run(address: &str, sql: &str, once: bool) -> Result<()> {
    let mut stream =
        TcpStream::connect(address).with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let path = if once { "/query?once=true" } else { "/query" };
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{sql}",
        sql.len()
    )?;
    stream.flush()?;
    let mut reader = BufReader::new(stream);
    let status = read_line(&mut reader)?;
    let code = status
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let mut chunked = false;
    let mut length = None;
    loop {
        let header = read_line(&mut reader)?;
        if header.is_empty() {
            break;
        }
        let lower = header.to_ascii_lowercase();
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let mut body = Body {
        reader,
        chunked,
        left: if chunked {
            0
        } else {
            length.unwrap_or(usize::MAX)
        },
        in_chunks: false,
        ended: false,
    };
    if code != "200" {
        let mut text = String::new();
        body.read_to_string(&mut text)?;
        let message = first_error(&text).unwrap_or(text.trim().to_string());
        bail!("query refused ({code}): {message}");
    }
    let mut view = View::new(std::io::stdout().is_terminal());
    let mut line = Vec::new();
    let mut buffered = BufReader::new(body);
    loop {
        line.clear();
        let n = buffered.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        if text.is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(text).context("a line from the server")?;
        view.take(text, &value)?;
    }
    view.finish()
}

fn first_error(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
}

fn read_line(reader: &mut impl BufRead) -> Result<String> {
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(MAX_LINE_BYTES as u64)
        .read_until(b'\n', &mut line)?;
    if !line.ends_with(b"\n") {
        bail!("the server's response ended early or has a line over {MAX_LINE_BYTES} bytes");
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}

/// The response body: de-chunked, or `Content-Length` bytes, or until
/// the connection closes.
struct Body<R> {
    reader: R,
    chunked: bool,
    /// Bytes left in the current chunk (chunked), or in the body
    /// (`usize::MAX` when the length is unknown).
    left: usize,
    /// A chunk was read (its CRLF comes before the next size line).
    in_chunks: bool,
    ended: bool,
}

impl<R: BufRead> Read for Body<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.ended || buf.is_empty() {
            return Ok(0);
        }
        if self.chunked && self.left == 0 {
            if self.in_chunks {
                read_line(&mut self.reader).map_err(std::io::Error::other)?;
            }
            let size_line = read_line(&mut self.reader).map_err(std::io::Error::other)?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                self.ended = true;
                return Ok(0);
            }
            self.left = size;
            self.in_chunks = true;
        }
        if self.left == 0 {
            self.ended = true;
            return Ok(0);
        }
        let want = buf.len().min(self.left);
        let n = self.reader.read(&mut buf[..want])?;
        if n == 0 {
            self.ended = true;
        } else if self.chunked || self.left != usize::MAX {
            self.left -= n;
        }
        Ok(n)
    }
}

/// What the command shows.
struct View {
    terminal: bool,
    columns: Vec<String>,
    rows: BTreeMap<Vec<String>, i64>,
    time: Option<u64>,
    /// The last `{"error"}` line: the command fails with it.
    last_error: Option<String>,
}

impl View {
    fn new(terminal: bool) -> View {
        View {
            terminal,
            columns: Vec::new(),
            rows: BTreeMap::new(),
            time: None,
            last_error: None,
        }
    }

    fn take(&mut self, text: &str, value: &Value) -> Result<()> {
        if let Some(message) = value.get("error").and_then(Value::as_str) {
            eprintln!("error: {message}");
            self.last_error = Some(message.to_string());
            return Ok(());
        }
        if !self.terminal {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}")?;
            out.flush()?;
            return Ok(());
        }
        if let Some(columns) = value.get("columns").and_then(Value::as_array) {
            self.columns = columns
                .iter()
                .map(|c| c.as_str().unwrap_or_default().to_string())
                .collect();
        } else if let Some(row) = value.get("row").and_then(Value::as_array) {
            let row: Vec<String> = row.iter().map(cell).collect();
            let diff = value.get("diff").and_then(Value::as_i64).unwrap_or(0);
            let count = self.rows.entry(row.clone()).or_insert(0);
            *count += diff;
            if *count == 0 {
                self.rows.remove(&row);
            }
        } else if let Some(time) = value.get("progress").and_then(Value::as_u64) {
            self.time = Some(time);
            self.draw()?;
        }
        Ok(())
    }

    fn draw(&self) -> Result<()> {
        let mut widths: Vec<usize> = self.columns.iter().map(String::len).collect();
        for row in self.rows.keys() {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.len());
                }
            }
        }
        let mut out = std::io::stdout().lock();
        write!(out, "\x1b[2J\x1b[H")?;
        let format_row = |cells: &[String]| {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
        };
        writeln!(out, "{}", format_row(&self.columns))?;
        for (row, count) in &self.rows {
            for _ in 0..(*count).max(0) {
                writeln!(out, "{}", format_row(row))?;
            }
        }
        if let Some(time) = self.time {
            writeln!(
                out,
                "-- complete through engine time {}",
                time.saturating_sub(1)
            )?;
        }
        out.flush()?;
        Ok(())
    }

    fn finish(&self) -> Result<()> {
        match &self.last_error {
            Some(message) => bail!("the query ended with an error: {message}"),
            None => Ok(()),
        }
    }
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
