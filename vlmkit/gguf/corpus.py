"""English + Japanese text for tokenizer agreement checks (HF tokenizer vs llama.cpp's).

Written to exercise what pre-tokenizers disagree on: contractions, digit runs, whitespace runs, tabs and
newlines, punctuation clusters, full-width characters, kana/kanji mixes, emoji and mixed scripts.
"""

TOKENIZER_CORPUS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "I've been told he's there, you'll see; we'd rather they're not. I'M SURE it'S fine.",
    "Numbers: 3 33 333 3333 33333 3.14159 1,000,000 and 2024-11-22T02:35:00Z.",
    "Multiple   spaces,\ttabs\t\tand\nnewlines\n\n\nand trailing spaces   ",
    "   leading spaces and a lone\ttab",
    "Punctuation!!! ??? ... --- === ''' \"\"\" ``` (parens) [brackets] {braces} <angles>",
    "def main():\n    return {'key': [1, 2, 3]}  # code\n",
    "What color is the square? Is there a red circle in the image? Answer: yes",
    "Emoji 🚀 and 🦙🦙 and 😶‍🌫️ mixed with text.",
    "吾輩は猫である。名前はまだ無い。",
    "東京都の今日の天気は晴れ、最高気温は２３度です。",
    "この画像には赤い四角と青い丸があります。正方形は何色ですか？「赤」です。",
    "カタカナ、ひらがな、漢字、そしてＡＢＣ全角英字と１２３全角数字。",
    "日本語と English が混ざった文章 mixed with 数字 42 と記号！？",
    "「こんにちは」と彼は言った。『さようなら』と彼女は答えた。",
    "改行を含む\n日本語の\n\n文章です。　全角スペースも。",
    "Café naïve résumé Ünïcödé — em dash – en dash … ellipsis",
    "Здравствуйте, мир! 你好，世界！ 안녕하세요 세계!",
    "USER: <image>\nWhat is in the picture?\nASSISTANT: A red square.",
    "",
    " ",
    "a",
    "\n",
)
