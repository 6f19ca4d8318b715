"Bad dataset files, worker processes and interrupted generation: the parts of the data lessons (cmae_course.data, readers, views) a notebook tests badly."
import os, shutil, signal, time, warnings, multiprocessing as mp
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
from cmae_course.data import make_default_dataset
from cmae_course.readers import read_items, read_tiny_imagenet, read_image_folder, decode_items, load_rgb, ImageSet
from cmae_course.augment import BoxTable
from cmae_course.views import ViewDataset, ViewDataLoader, cmae_dataloaders, mae_dataloaders, eval_dataloader

@pytest.fixture(scope='module')
def small(tmp_path_factory):
    return make_default_dataset(tmp_path_factory.mktemp('gen'), n_classes=3, n_train=6, n_val=2, n_test=1)

@pytest.fixture
def ds(small, tmp_path):
    "A writable copy of the small generated dataset."
    d = tmp_path/'ds'; shutil.copytree(small, d); return d

def img(d, w='disk', k=0): return d/'train'/w/'images'/f'{w}_{k}.JPEG'
def val_ann(d): return d/'val'/'val_annotations.txt'

# ---------------------------------------------------------------- generator
def test_generator_deterministic_and_xdg(tmp_path, monkeypatch, small):
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path/'xdg'))
    p = make_default_dataset(n_classes=3, n_train=6, n_val=2, n_test=1)
    assert p.parent == tmp_path/'xdg'/'cmae_course'
    for f in ['wnids.txt', 'words.txt', 'val/val_annotations.txt', 'train/square/square_boxes.txt',
              'train/triangle/images/triangle_5.JPEG', 'test/images/test_2.JPEG']:
        assert (p/f).read_bytes() == (small/f).read_bytes(), f
    assert make_default_dataset(n_classes=3, n_train=6, n_val=2, n_test=1) == p      # cached: same folder
    (p/'meta.json').unlink()                                                       # not a complete dataset any more
    with pytest.raises(ValueError, match='not a complete dataset'): make_default_dataset(n_classes=3, n_train=6, n_val=2, n_test=1)
    with pytest.raises(ValueError, match='n_classes'): make_default_dataset(tmp_path, n_classes=1)
    with pytest.raises(ValueError, match='n_val'): make_default_dataset(tmp_path, n_val=-1)

def test_generation_killed_leaves_no_half_dataset(tmp_path):
    "SIGKILL in the middle of writing: the final folder never appears; the next call generates it whole."
    root = tmp_path/'cache'
    p = mp.get_context('fork').Process(target=make_default_dataset, args=(root,), kwargs=dict(n_classes=2, n_train=400, n_val=1))
    p.start()
    t0 = time.time()
    while time.time() - t0 < 60:
        tmp = list(root.glob('.tmp-*/train/*/images/*.JPEG')) if root.exists() else []
        if len(tmp) > 20: break
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL); p.join()
    assert len(tmp) > 20, "generation did not start"
    assert [q.name for q in root.iterdir() if not q.name.startswith('.tmp-')] == []
    out = make_default_dataset(root, n_classes=2, n_train=10, n_val=1)
    assert len(read_items(out)) == 20 and (out/'meta.json').is_file()

# ---------------------------------------------------------------- bad files
def test_bad_images_skipped_and_counted(ds):
    img(ds).write_bytes(b'')                                         # empty file
    f = img(ds, 'square'); f.write_bytes(f.read_bytes()[:200])   # truncated JPEG
    Image.open(img(ds, 'triangle')).save(img(ds, 'triangle', 1), format='PNG')  # PNG named .JPEG: fine
    with pytest.warns(UserWarning, match=r'unreadable images skipped: 2 of 18 \(first: .*disk_0.JPEG'):
        ims = decode_items(read_items(ds), max_bad=0.2)
    assert len(ims) == 16 and len(ims.skipped) == 2 and ims.images.shape == (16, 3, 64, 64)
    assert len(ims.labels) == len(ims.true_boxes) == len(ims.paths) == 16
    with pytest.raises(ValueError, match=r'2 of 18 images unreadable'): decode_items(read_items(ds), max_bad=0.05)

@pytest.mark.parametrize('mode', ['L', 'LA', 'RGBA', 'P', 'PA', 'CMYK', 'I;16', 'I', 'F', '1', 'YCbCr'])
def test_any_mode_becomes_rgb(tmp_path, mode):
    im = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    im = im.convert('L').convert(mode) if mode in ('I;16', 'I', 'F', '1', 'LA') else im.convert(mode)
    f = tmp_path/('x.tiff' if mode in ('I;16', 'I', 'F', 'PA', 'YCbCr') else 'x.png' if mode != 'CMYK' else 'x.jpg')
    im.save(f)
    a, wh = load_rgb(f, 64)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8 and wh == (50, 40)

def test_val_problems(ds):
    lines = val_ann(ds).read_text().splitlines()
    for bad, msg in [('val_0.JPEG\tn99999999\t1\t1\t5\t5', "unknown class id 'n99999999'"),
                     ('nope.JPEG\tdisk\t1\t1\t5\t5', "image 'nope.JPEG' does not exist"),
                     ('../../etc/passwd\tdisk\t1\t1\t5\t5', 'resolves outside'),
                     ('..\\..\\x\tdisk', None), ('/etc/passwd\tdisk\t1\t1\t5\t5', 'resolves outside'),
                     ('val_0.JPEG\tdisk\t1\t1', 'expected'), (lines[0], 'annotated twice'),
                     ('val_0.JPEG\tdisk\tx\t1\t5\t5', 'not four numbers')]:
        val_ann(ds).write_text('\n'.join(lines[1:] + [bad]) if bad != lines[0] else '\n'.join(lines + [bad]))
        if msg is None:                                  # a backslash name is just a (missing) file on POSIX
            with pytest.raises(ValueError, match='does not exist'): read_items(ds, 'val')
            continue
        with pytest.raises(ValueError, match=msg) as e: read_items(ds, 'val')
        assert 'val_annotations.txt:' in str(e.value) and '\n' not in str(e.value)
    val_ann(ds).write_bytes(b'\xff\xfe\x00bad')
    with pytest.raises(ValueError, match='not a UTF-8 text file'): read_items(ds, 'val')
    val_ann(ds).unlink()
    with pytest.raises(FileNotFoundError, match='val_annotations.txt: missing'): read_items(ds, 'val')

def test_unannotated_val_image_warns(ds):
    shutil.copy(ds/'val'/'images'/'val_0.JPEG', ds/'val'/'images'/'extra.JPEG')
    with pytest.warns(UserWarning, match="1 image\\(s\\) without annotation ignored \\(first: 'extra.JPEG'\\)"):
        assert len(read_items(ds, 'val')) == 6

def test_train_problems(ds):
    bf = ds/'train'/'disk'/'disk_boxes.txt'
    good = bf.read_text()
    for bad, msg in [('missing.JPEG\t1\t1\t5\t5', "image 'missing.JPEG' does not exist"),
                     ('../../../../etc/passwd\t1\t1\t5\t5', 'resolves outside'), ('disk_0.JPEG\t1\t1\t5', 'expected')]:
        bf.write_text(good + bad + '\n')
        with pytest.raises(ValueError, match=msg): read_items(ds)
    bf.unlink()                                               # no box file: images load, boxes unknown
    it = read_items(ds); assert np.isnan(it.pixel_boxes[it.labels == 0]).all() and not np.isnan(it.pixel_boxes[it.labels == 1]).any()
    (ds/'train'/'stray').mkdir()
    with pytest.warns(UserWarning, match="not in wnids.txt ignored"): read_items(ds)
    (ds/'train'/'stray').rmdir()
    for f in (ds/'train'/'square'/'images').iterdir(): f.unlink()
    with pytest.raises(ValueError, match='empty class folder'): read_items(ds)
    shutil.rmtree(ds/'train'/'square')
    with pytest.raises(FileNotFoundError, match='image folder missing for class'): read_items(ds)

def test_wnids_problems(ds):
    wf = ds/'wnids.txt'
    for text, msg in [('', 'lists no class ids'), ('disk\ndisk\n', 'listed twice'), ('../x\n', 'not a plain name')]:
        wf.write_text(text)
        with pytest.raises(ValueError, match=msg): read_items(ds)
    wf.write_text('disk\nsquare\ntriangle\n'); (ds/'words.txt').unlink()
    assert read_items(ds).names == ['disk', 'square', 'triangle']   # ids double as names
    wf.unlink()                     # without wnids.txt the folder is read as an ImageFolder of its split folders
    assert read_items(ds).classes == ['disk', 'square', 'triangle']

def test_boxes_clipped_or_rejected(ds):
    bf = ds/'train'/'disk'/'disk_boxes.txt'
    ls = bf.read_text().splitlines()
    ls[0] = 'disk_0.JPEG\t-3\t-3\t80\t40'; ls[1] = 'disk_1.JPEG\t30\t5\t10\t40'; ls[2] = 'disk_2.JPEG\t70\t70\t90\t90'
    bf.write_text('\n'.join(ls))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always'); ims = decode_items(read_items(ds))
    msgs = [str(m.message) for m in w]
    assert any('boxes clipped to the image: 1 of 18' in m for m in msgs)
    assert any('boxes rejected (set to unknown): 2 of 18' in m for m in msgs)
    assert torch.allclose(ims.true_boxes[0], torch.tensor([0, 0, 1, 41/64]))
    assert ims.true_boxes[1:3].isnan().all() and not ims.true_boxes[3:].isnan().any()

def test_not_a_dataset(tmp_path, ds):
    (tmp_path/'f.txt').write_text('x')
    with pytest.raises(ValueError, match='not a dataset'): read_items(tmp_path/'f.txt')
    with pytest.raises(FileNotFoundError, match='does not exist'): read_items(tmp_path/'nothing')
    (tmp_path/'loose').mkdir(); (tmp_path/'loose'/'a.jpg').write_bytes(b'')
    with pytest.raises(ValueError, match=r'not a dataset: expected wnids.txt'): read_items(tmp_path/'loose')
    with pytest.raises(ValueError, match='no wnids.txt'): read_tiny_imagenet(tmp_path/'loose')
    with pytest.raises(ValueError, match='no class sub-folders'): read_image_folder(tmp_path/'loose')
    with pytest.raises(ValueError, match='split'): read_tiny_imagenet(ds, 'training')

def test_image_folder_variants(tmp_path, ds):
    root = tmp_path/'if'
    for w in ['disk', 'square']: shutil.copytree(ds/'train'/w/'images', root/'train'/w/'sub')   # nested files
    (root/'train'/'.hidden').mkdir()
    it = read_items(root, 'train'); assert it.classes == ['disk', 'square'] and len(it) == 12
    (root/'train'/'empty').mkdir()
    with pytest.raises(ValueError, match="empty class folder \\(class 'empty'"): read_items(root)
    shutil.rmtree(root/'train'/'empty')
    dls = mae_dataloaders(root, bs=4, valid_pct=0.25, device='cpu')            # no val folder: seeded random split
    assert len(dls.train.dataset) == 9 and len(dls.valid.dataset) == 3 and dls.train.dataset.true_boxes.isnan().all()
    shutil.copytree(root/'train', root/'val')
    assert len(mae_dataloaders(root, bs=4, device='cpu').valid.dataset) == 12      # a val folder is used as is

# ---------------------------------------------------------------- loaders
def _gradient_set(n=32):
    "Images whose red channel is 4*column: a crop's mean red tells where the crop is."
    x = (torch.arange(64)*4).expand(n, 1, 64, 64).to(torch.uint8)
    x = torch.cat([x, torch.zeros_like(x), torch.zeros_like(x)], 1)
    return ImageSet(x, torch.arange(n), torch.full((n, 4), float('nan')), [f'{i}' for i in range(n)], ['c'], ['c'])

def _epoch(dl):
    xs, ys = [], []
    for x, y in dl: xs.append(x[:, 0].mean((1, 2))); ys.append(y)
    return torch.cat(xs), torch.cat(ys)

def test_boxtable_updates_reach_workers():
    "The BoxTable written in the main process after the workers started is what they crop with (shared memory)."
    torch.manual_seed(0)
    ds = ViewDataset(_gradient_set(), 'mae', img_size=32, scale=(0.05, 0.05), flip=False, use_box=True)
    dl = ViewDataLoader(ds, bs=8, shuffle=True, num_workers=2, persistent_workers=True, device='cpu')
    ds.boxes.set_all(torch.tensor([[0, 0, 0.1, 1.]]).repeat(len(ds), 1))
    left, y = _epoch(dl)
    assert sorted(y.tolist()) == list(range(32))               # every item once per epoch, across workers
    ds.boxes.update(torch.arange(len(ds)), torch.tensor([[0.9, 0, 1, 1.]]).repeat(len(ds), 1))   # workers already run
    right, _ = _epoch(dl)
    ds.use_box = False
    anywhere, _ = _epoch(dl)
    assert left.max() < anywhere.mean() < right.min(), (left.max(), anywhere.mean(), right.min())

def test_dataloaders_on_generated(small, tmp_path):
    torch.manual_seed(0)
    dls = cmae_dataloaders(small, bs=4, num_workers=2, device='cpu')
    assert dls.n_inp == 2 and len(dls.train) == 18//4 and len(dls.valid) == 2
    d2 = tmp_path/'copy'; shutil.copytree(small, d2); dls2 = mae_dataloaders(d2, bs=4, num_workers=0, device='cpu')
    shutil.rmtree(d2/'train')                                  # deleting the files mid-training cannot crash an epoch
    n = sum(len(y) for x, y in dls2.train); assert n == 16
    x1, x2, y = dls.train.one_batch()
    assert x1.shape == x2.shape == (4, 3, 64, 64) and x1.dtype == torch.float32 and y.dtype == torch.long
    seen = torch.cat([b[-1] for b in dls.valid]); assert seen.tolist() == dls.valid.dataset.labels.tolist()
    ev = eval_dataloader(dls.train.dataset, bs=5, num_workers=2, device='cpu')
    assert torch.cat([b[1] for b in ev]).tolist() == dls.train.dataset.labels.tolist()   # same order as the dataset

def test_learner_fits_with_workers(small):
    from fastai.learner import Learner
    import torch.nn as nn
    class M(nn.Module):
        def __init__(self): super().__init__(); self.l = nn.Linear(3*32*32, 3)
        def forward(self, x1, x2): return self.l(x1.flatten(1)) + self.l(x2.flatten(1))
    dls = cmae_dataloaders(small, img_size=32, bs=6, num_workers=2, device='cpu')
    dls.train.dataset.boxes.set_all(dls.train.dataset.true_boxes.nan_to_num(0.5)); dls.train.dataset.use_box = True
    learn = Learner(dls, M(), loss_func=nn.CrossEntropyLoss())
    with learn.no_logging(): learn.fit(2, 1e-3)
    assert np.isfinite(learn.recorder.values[-1]).all()


LIT_CMD = "python -c \"from cmae_course.data import make_default_dataset; print(make_default_dataset('data', light=0.5))\""

def test_lit_dataset_command_as_written(tmp_path):
    """Lesson 08_location: the command that writes the lit copy of the embedded dataset, run as written (with a timeout) in a
    scratch folder: the full 5,000 + 500 images, the same objects and boxes as the default set, brighter above than below."""
    import subprocess, sys, shlex
    assert LIT_CMD in (Path(__file__).parent.parent/'nbs'/'08_location.ipynb').read_text().replace('\\"', '"')
    r = subprocess.run([sys.executable, *shlex.split(LIT_CMD)[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    lit = tmp_path/r.stdout.strip()
    assert lit.name == 'shapes10-tr500-va50-te0-s64-q90-seed0-v2-light0.5'
    assert len(read_items(lit, 'train').paths) == 5000 and len(read_items(lit, 'val').paths) == 500
    dark = make_default_dataset(tmp_path/'dark', n_train=3, n_val=1)
    for f in ('train/disk/disk_boxes.txt', 'val/val_annotations.txt'):   # same objects, same boxes
        assert (lit/f).read_text().splitlines()[:3] == (dark/f).read_text().splitlines()[:3]
    a = np.asarray(Image.open(lit/'train'/'disk'/'images'/'disk_0.JPEG'), float)
    b = np.asarray(Image.open(dark/'train'/'disk'/'images'/'disk_0.JPEG'), float)
    assert a[:8].mean() / b[:8].mean() > 1.1 and a[-8:].mean() / b[-8:].mean() < 0.9
