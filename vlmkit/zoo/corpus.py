"""A small English + Japanese text corpus, embedded so the zoo's tokenizers train offline.

Written for this project (no third-party text). It mixes prose, chat turns, numbers, code-ish
punctuation, kana, kanji and full-width symbols so the trained tokenizers meet every pre-tokenizer
path (spaces, digits, CJK runs, punctuation) that a real calm2 / Llama / Gemma tokenizer meets.
"""

from __future__ import annotations

ENGLISH = [
    "The quick brown fox jumps over the lazy dog.",
    "A red square sits to the left of a small blue circle.",
    "Is there a green triangle in the image? Yes, there is one.",
    "How many circles are there in the picture? There are three circles.",
    "What color is the large square? The large square is yellow.",
    "Describe the image in one sentence.",
    "The cat is sleeping on a warm wooden table near the window.",
    "Please answer the question with a single word: yes or no.",
    "Vision language models read images and text together.",
    "We convert the checkpoint to GGUF and run it with llama.cpp.",
    "Quantization stores each weight in four or eight bits instead of sixteen.",
    "In 2024 the model had 7,500,000,000 parameters and used 15 GB of memory.",
    "The train leaves at 10:45 and arrives at 13:20, about 2.5 hours later.",
    "def forward(self, x): return self.proj(x) + 1",
    "She said, \"Hello, world!\" and then laughed (quite loudly).",
    "Tokyo, Osaka and Kyoto are three large cities in Japan.",
    "The weather is sunny today, but it may rain tomorrow evening.",
    "A person is riding a bicycle along the river in the morning.",
    "There is no dog in this image; there is only a white cat.",
    "The blue circle is above the red square and below the green star.",
    "Numbers like 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 100 appear in text.",
    "USER: What is in the picture?\nASSISTANT: A small house with a red roof.",
    "I can't believe it's already December; we'll meet again next year.",
    "Large language models predict the next token from the previous tokens.",
    "The kitchen has a table, two chairs, a kettle and a bowl of apples.",
    "Email me at someone@example.com or visit https://example.com/docs.",
    "Temperature 0.7, top_p 0.9 and repetition_penalty 1.05 are common settings.",
    "An orange triangle is in the bottom right corner of the scene.",
    "Children are playing soccer in the park after school.",
    "The answer is no: the square is not purple, it is blue.",
]

JAPANESE = [
    "この画像には何が写っていますか。",
    "赤い四角形が青い円の左にあります。",
    "画像の中に緑の三角形はありますか。はい、あります。",
    "円はいくつありますか。円は三つあります。",
    "大きな四角形は何色ですか。黄色です。",
    "猫が窓の近くの木のテーブルの上で寝ています。",
    "今日は晴れていますが、明日の夜は雨が降るかもしれません。",
    "東京、大阪、京都は日本の大きな都市です。",
    "私は毎朝七時に起きて、コーヒーを飲みます。",
    "この写真について一文で説明してください。",
    "はい、いいえで答えてください。",
    "人が朝に川沿いで自転車に乗っています。",
    "この画像には犬はいません。白い猫だけがいます。",
    "青い円は赤い四角形の上にあり、緑の星の下にあります。",
    "モデルをGGUFに変換して、llama.cppで実行します。",
    "量子化では重みを十六ビットではなく四ビットや八ビットで保存します。",
    "2024年に公開されたモデルは約75億のパラメータを持っています。",
    "電車は10時45分に出発し、13時20分に到着します。",
    "子どもたちが放課後に公園でサッカーをしています。",
    "台所にはテーブル、椅子が二つ、やかん、りんごの入ったボウルがあります。",
    "オレンジ色の三角形が画面の右下にあります。",
    "ユーザー：写真には何がありますか？\nアシスタント：赤い屋根の小さな家です。",
    "日本語と英語の両方を理解する視覚言語モデルです。",
    "答えは「いいえ」です。四角形は紫ではなく青です。",
    "カタカナ、ひらがな、漢字が混ざった文章を正しく扱います。",
    "今年の冬はとても寒くて、雪がたくさん降りました。",
    "駅の前に新しいパン屋さんができました。",
    "彼女は「こんにちは、世界！」と言って笑いました。",
    "ＡＢＣ１２３のような全角文字も含めます。",
    "富士山は日本で一番高い山です。",
]

CORPUS = ENGLISH + JAPANESE
