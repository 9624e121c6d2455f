//! Corpus readers: every format, folder walking, defaults, and every error.

use std::fs;
use std::io::Write;
use std::path::Path;

use filtermon::error::is_input_error;
use filtermon::evalset::reader::{CorpusReader, Document, Format, ReaderOptions, MAX_SKIP_REASONS};

fn doc(id: &str, domain: &str, text: &str) -> Document {
    Document {
        id: id.into(),
        domain: domain.into(),
        text: text.into(),
    }
}

fn read_all(paths: &[&Path], opts: ReaderOptions) -> Vec<Document> {
    CorpusReader::open(paths, opts)
        .unwrap()
        .collect::<anyhow::Result<Vec<_>>>()
        .unwrap()
}

const JSONL: &str = "{\"id\": \"a\", \"domain\": \"news\", \"text\": \"Hello (world).\"}\n\
\n   \n\
{\"text\": \"no id, no domain\"}\n\
{\"id\": 17, \"domain\": null, \"text\": \"numeric id\", \"extra\": [1, 2]}\r\n";

fn expected(stem: &str, default_domain: &str) -> Vec<Document> {
    vec![
        doc("a", "news", "Hello (world)."),
        doc(&format!("{stem}:4"), default_domain, "no id, no domain"),
        doc("17", default_domain, "numeric id"),
    ]
}

#[test]
fn jsonl_plain_gz_zst() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("c.jsonl");
    fs::write(&plain, JSONL).unwrap();

    // Two gzip members: MultiGzDecoder must read both.
    let gz = dir.path().join("c.jsonl.gz");
    let (first, second) = JSONL.split_at(JSONL.find("{\"text\"").unwrap());
    let mut bytes = Vec::new();
    for part in [first, second] {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(part.as_bytes()).unwrap();
        bytes.extend(enc.finish().unwrap());
    }
    fs::write(&gz, bytes).unwrap();

    let zst = dir.path().join("c.jsonl.zst");
    fs::write(&zst, zstd::encode_all(JSONL.as_bytes(), 3).unwrap()).unwrap();

    for p in [&plain, &gz, &zst] {
        assert_eq!(
            read_all(&[p], ReaderOptions::default()),
            expected("c", "default"),
            "{}",
            p.display()
        );
        let opts = ReaderOptions {
            default_domain: Some("web".into()),
            ..Default::default()
        };
        assert_eq!(read_all(&[p], opts), expected("c", "web"));
    }
    assert_eq!(Format::of(&gz), Some(Format::JsonlGz));
    assert_eq!(Format::of(Path::new("X.JSONL.ZST")), Some(Format::JsonlZst));
    assert_eq!(Format::of(Path::new(".jsonl")), None);
    assert_eq!(Format::of(Path::new("a.json")), None);
}

#[test]
fn custom_field_names_and_bom() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.jsonl");
    fs::write(
        &p,
        "\u{feff}{\"content\": \"t\", \"doc_id\": \"d1\", \"source\": \"code\", \"text\": 3}\n",
    )
    .unwrap();
    let opts = ReaderOptions {
        text_field: "content".into(),
        id_field: "doc_id".into(),
        domain_field: "source".into(),
        ..Default::default()
    };
    assert_eq!(read_all(&[&p], opts), vec![doc("d1", "code", "t")]);
}

#[test]
fn text_files_and_folders() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("corpus");
    fs::create_dir_all(root.join("python/sub")).unwrap();
    fs::create_dir_all(root.join("prose")).unwrap();
    fs::create_dir_all(root.join(".hidden")).unwrap();
    fs::write(root.join("prose/b.txt"), "story b").unwrap();
    fs::write(root.join("prose/a.txt"), "\u{feff}story a").unwrap();
    fs::write(root.join("python/sub/m.txt"), "x = (1)\n").unwrap();
    fs::write(root.join("python/z.jsonl"), "{\"text\": \"j\"}\n").unwrap();
    fs::write(root.join("README.md"), "ignored").unwrap();
    fs::write(root.join(".hidden/h.txt"), "ignored").unwrap();
    fs::write(root.join("prose/.swap.txt"), "ignored").unwrap();

    let reader = CorpusReader::open(&[&root], ReaderOptions::default()).unwrap();
    let files: Vec<String> = reader
        .pending_files()
        .map(|p| {
            p.strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        files,
        [
            "prose/a.txt",
            "prose/b.txt",
            "python/sub/m.txt",
            "python/z.jsonl"
        ]
    );
    let docs: Vec<Document> = reader.map(Result::unwrap).collect();
    assert_eq!(
        docs,
        vec![
            doc("prose/a", "prose", "story a"),
            doc("prose/b", "prose", "story b"),
            doc("python/sub/m", "sub", "x = (1)\n"),
            doc("z:1", "default", "j"),
        ]
    );

    // `--domain` overrides the folder name; a file named directly is its stem.
    let opts = ReaderOptions {
        default_domain: Some("books".into()),
        ..Default::default()
    };
    let single = root.join("prose/a.txt");
    assert_eq!(
        read_all(&[&single], opts),
        vec![doc("a", "books", "story a")]
    );

    // Several paths keep their order.
    let docs = read_all(
        &[&root.join("python/z.jsonl"), &single],
        ReaderOptions::default(),
    );
    assert_eq!(
        docs.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["z:1", "a"]
    );
}

/// Reads with and without skip_bad; returns the strict error and the lenient documents.
fn both_ways(path: &Path) -> (String, Vec<Document>, usize, Vec<String>) {
    let mut strict = CorpusReader::open(&[path], ReaderOptions::default()).unwrap();
    let err = loop {
        match strict.next() {
            Some(Ok(_)) => continue,
            Some(Err(e)) => break e,
            None => panic!("{}: no error", path.display()),
        }
    };
    assert!(is_input_error(&err));
    assert!(strict.next().is_none(), "reading stops after an error");

    let opts = ReaderOptions {
        skip_bad: true,
        ..Default::default()
    };
    let mut lenient = CorpusReader::open(&[path], opts).unwrap();
    let docs: Vec<Document> = lenient.by_ref().map(Result::unwrap).collect();
    (
        format!("{err:#}"),
        docs,
        lenient.skipped(),
        lenient.skip_reasons().to_vec(),
    )
}

#[test]
fn malformed_lines() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[u8], &str)] = &[
        (
            b"{\"text\": \"ok\"}\n{\"text\": \"x\"\n",
            "bad.jsonl:2: invalid JSON",
        ),
        (
            b"{\"text\": \"ok\"}\n[1, 2]\n",
            "bad.jsonl:2: expected a JSON object, found an array",
        ),
        (
            b"{\"text\": \"ok\"}\n{\"id\": \"q\"}\n",
            "bad.jsonl:2: missing text field `text`",
        ),
        (
            b"{\"text\": \"ok\"}\n{\"text\": null}\n",
            "bad.jsonl:2: missing text field `text`",
        ),
        (
            b"{\"text\": \"ok\"}\n{\"text\": [\"a\"]}\n",
            "bad.jsonl:2: text field `text` is an array, not a string",
        ),
        (
            b"{\"text\": \"ok\"}\n{\"text\": \"a\", \"id\": 1.5}\n",
            "bad.jsonl:2: id field `id` is a number, not a string",
        ),
        (
            b"{\"text\": \"ok\"}\n{\"text\": \"a\", \"id\": true}\n",
            "bad.jsonl:2: id field `id` is a boolean",
        ),
        (
            b"{\"text\": \"ok\"}\n{\"text\": \"a\", \"domain\": 3}\n",
            "bad.jsonl:2: domain field `domain` is a number",
        ),
        (
            b"{\"text\": \"ok\"}\n{\"text\": \"\xff\"}\n",
            "bad.jsonl:2: not valid UTF-8 (byte 10)",
        ),
        (
            b"{\"text\": \"ok\"}\nnot json\n",
            "bad.jsonl:2: invalid JSON: expected ident",
        ),
    ];
    for (content, want) in cases {
        let p = dir.path().join("bad.jsonl");
        let mut content = content.to_vec();
        content.extend_from_slice(b"\n{\"text\": \"after\"}\n");
        fs::write(&p, &content).unwrap();
        let (err, docs, skipped, reasons) = both_ways(&p);
        assert!(err.contains(want), "got {err:?}, want {want:?}");
        assert!(err.starts_with(&p.display().to_string()));
        assert_eq!(
            docs.iter().map(|d| d.text.as_str()).collect::<Vec<_>>(),
            ["ok", "after"]
        );
        assert_eq!(skipped, 1);
        assert_eq!(reasons.len(), 1);
        assert!(reasons[0].contains(want));
    }
}

#[test]
fn skip_reasons_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("many.jsonl");
    let mut text = String::new();
    for i in 0..25 {
        text.push_str(&format!("{{\"nope\": {i}}}\n{{\"text\": \"t{i}\"}}\n"));
    }
    fs::write(&p, text).unwrap();
    let opts = ReaderOptions {
        skip_bad: true,
        ..Default::default()
    };
    let mut r = CorpusReader::open(&[&p], opts).unwrap();
    assert_eq!(r.by_ref().filter(|d| d.is_ok()).count(), 25);
    assert_eq!(r.skipped(), 25);
    assert_eq!(r.skip_reasons().len(), MAX_SKIP_REASONS);
    assert!(
        r.skip_reasons()[1].ends_with("many.jsonl:3: missing text field `text`"),
        "{}",
        r.skip_reasons()[1]
    );
}

#[test]
fn text_file_not_utf8() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("d")).unwrap();
    let bad = dir.path().join("d/bad.txt");
    fs::write(&bad, b"ok \xc3(").unwrap();
    fs::write(dir.path().join("d/good.txt"), "fine").unwrap();
    let (err, docs, skipped, _) = both_ways(&dir.path().join("d"));
    assert!(err.contains("bad.txt: not valid UTF-8 (byte 3)"), "{err}");
    assert_eq!(docs, vec![doc("good", "d", "fine")]);
    assert_eq!(skipped, 1);
}

#[test]
fn corrupt_compressed_files_stop_reading() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["x.jsonl.gz", "x.jsonl.zst"] {
        let p = dir.path().join(name);
        fs::write(&p, b"definitely not compressed data").unwrap();
        let opts = ReaderOptions {
            skip_bad: true,
            ..Default::default()
        };
        let mut r = CorpusReader::open(&[&p], opts).unwrap();
        let e = match r.next() {
            Some(Err(e)) => e,
            other => panic!("{name}: expected an error, got {other:?}"),
        };
        assert!(is_input_error(&e));
        let msg = format!("{e:#}");
        assert!(
            msg.contains(name) && (msg.contains("read error") || msg.contains("zstd")),
            "{msg}"
        );
        assert!(r.next().is_none());
    }
}

#[test]
fn open_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.jsonl");
    let e = CorpusReader::open(&[&missing], ReaderOptions::default())
        .err()
        .unwrap();
    assert!(
        is_input_error(&e) && e.to_string().contains("nope.jsonl: cannot open"),
        "{e}"
    );

    let csv = dir.path().join("data.csv");
    fs::write(&csv, "a,b").unwrap();
    let e = CorpusReader::open(&[&csv], ReaderOptions::default())
        .err()
        .unwrap();
    assert!(
        is_input_error(&e) && e.to_string().contains("data.csv: unsupported file type"),
        "{e}"
    );

    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    fs::write(empty.join("notes.md"), "x").unwrap();
    let e = CorpusReader::open(&[&empty], ReaderOptions::default())
        .err()
        .unwrap();
    assert!(
        is_input_error(&e) && e.to_string().contains("no .jsonl"),
        "{e}"
    );
}

#[test]
fn empty_files_give_no_documents() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("e.jsonl");
    fs::write(&p, "").unwrap();
    let t = dir.path().join("e.txt");
    fs::write(&t, "").unwrap();
    let docs = read_all(&[&p, &t], ReaderOptions::default());
    // An empty .txt file is still a (empty) document; prepare decides what to do with it.
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].text, "");
}

#[test]
fn long_file_is_streamed() {
    // Not a memory measurement; just many lines through the buffered path.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.jsonl.zst");
    let mut text = String::new();
    for i in 0..20_000 {
        text.push_str(&format!(
            "{{\"text\": \"line {i}\", \"domain\": \"d{}\"}}\n",
            i % 3
        ));
    }
    fs::write(&p, zstd::encode_all(text.as_bytes(), 1).unwrap()).unwrap();
    let docs = read_all(&[&p], ReaderOptions::default());
    assert_eq!(docs.len(), 20_000);
    assert_eq!(docs[19_999], doc("big:20000", "d1", "line 19999"));
}
